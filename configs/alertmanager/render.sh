#!/bin/sh
# Writes Alertmanager's config for the local stack from the environment, then runs Alertmanager with it
# (docker-compose.yml's `alertmanager` entrypoint; scripts/stack runs it too). Alertmanager itself does not
# expand environment variables, hence this script.
#
# Routes, one per severity (the seed rules' severities); every alert is also logged by the `alert-log`
# webhook receiver (alert-log.py), so the stack shows notifications with no mail or Slack set up:
#   critical -> e-mail and Slack      error -> e-mail      warning -> Slack      info -> Slack
# E-mail is on when SMTP_SMARTHOST (host:port), SMTP_FROM and ALERT_EMAIL_TO are set (SMTP_AUTH_USERNAME,
# SMTP_AUTH_PASSWORD optional; STARTTLS unless SMTP_REQUIRE_TLS=false). Slack is on when SLACK_WEBHOOK_URL is
# set (SLACK_CHANNEL optional). ALERT_LOG_URL moves the log receiver (default http://alert-log:8080/);
# ALERTMANAGER_GROUP_WAIT and ALERTMANAGER_GROUP_INTERVAL change the grouping times (30s, 5m);
# ALERTMANAGER_BIN names the binary (Debian's is prometheus-alertmanager).
#
#   render.sh CONFIG_PATH [alertmanager arguments...]   writes CONFIG_PATH, then execs alertmanager with them
#   render.sh CONFIG_PATH --check                       writes CONFIG_PATH only
set -eu

out="$1"
shift

# One line of output; printf, not echo, which dash lets interpret backslashes.
line() {
  printf '%s\n' "$1"
}

# A YAML double-quoted string.
quote() {
  printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

email=""
if [ -n "${SMTP_SMARTHOST:-}" ] && [ -n "${SMTP_FROM:-}" ] && [ -n "${ALERT_EMAIL_TO:-}" ]; then
  email="yes"
fi
slack=""
if [ -n "${SLACK_WEBHOOK_URL:-}" ]; then
  slack="yes"
fi

{
  line "# Written by configs/alertmanager/render.sh from the environment; edit that script, not this file."
  if [ -n "$email" ]; then
    line "global:"
    line "  smtp_smarthost: $(quote "$SMTP_SMARTHOST")"
    line "  smtp_from: $(quote "$SMTP_FROM")"
    line "  smtp_require_tls: ${SMTP_REQUIRE_TLS:-true}"
    if [ -n "${SMTP_AUTH_USERNAME:-}" ]; then
      line "  smtp_auth_username: $(quote "$SMTP_AUTH_USERNAME")"
      line "  smtp_auth_password: $(quote "${SMTP_AUTH_PASSWORD:-}")"
    fi
  fi
  cat <<YAML
route:
  receiver: log
  group_by: [alertname, job]
  group_wait: ${ALERTMANAGER_GROUP_WAIT:-30s}
  group_interval: ${ALERTMANAGER_GROUP_INTERVAL:-5m}
  repeat_interval: 4h
  routes:
    - {matchers: ['severity="critical"'], receiver: critical}
    - {matchers: ['severity="error"'], receiver: error}
    - {matchers: ['severity="warning"'], receiver: warning}
    - {matchers: ['severity="info"'], receiver: info}
inhibit_rules:
  # A critical alert silences the warnings of the same alert name and service.
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [alertname, job]
receivers:
  - name: log
    webhook_configs: [{url: $(quote "${ALERT_LOG_URL:-http://alert-log:8080/}"), send_resolved: true}]
YAML
  for severity in critical error warning info; do
    line "  - name: $severity"
    line "    webhook_configs: [{url: $(quote "${ALERT_LOG_URL:-http://alert-log:8080/}"), send_resolved: true}]"
    case "$severity" in critical | error) wants_email=yes ;; *) wants_email="" ;; esac
    case "$severity" in critical | warning | info) wants_slack=yes ;; *) wants_slack="" ;; esac
    if [ -n "$email" ] && [ -n "$wants_email" ]; then
      line "    email_configs: [{to: $(quote "$ALERT_EMAIL_TO"), send_resolved: true}]"
    fi
    if [ -n "$slack" ] && [ -n "$wants_slack" ]; then
      line "    slack_configs:"
      line "      - api_url: $(quote "$SLACK_WEBHOOK_URL")"
      if [ -n "${SLACK_CHANNEL:-}" ]; then
        line "        channel: $(quote "$SLACK_CHANNEL")"
      fi
      line "        send_resolved: true"
    fi
  done
} > "$out"

if [ "${1:-}" = "--check" ]; then
  exit 0
fi
exec "${ALERTMANAGER_BIN:-alertmanager}" --config.file="$out" "$@"
