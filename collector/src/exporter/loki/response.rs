//! Reading Loki's error bodies: how many entries of a push it rejected, and why.
//!
//! Loki answers a push it partly accepted with 400 and keeps the valid entries (grafana/loki v3.7,
//! `pkg/distributor/distributor.go` returns the validation errors after forwarding the valid streams;
//! `pkg/ingester/stream.go` stores the valid entries before `errorForFailedEntries`). The body is plain text
//! (`http.Error`) in one of two shapes:
//!
//! * the distributor's grouped validation errors (`pkg/util/errors/errors.go`, `GroupedErrors`): messages joined
//!   with `"; "`, each prefixed `"<n> errors like: "` unless there is a single error;
//! * the ingester's per-entry errors: up to 10 lines `entry with timestamp … ignored, reason: '…',` and a last
//!   line `user '<tenant>', total ignored: <n> out of <m> for stream: {…}`.
//!
//! The messages are those of `pkg/validation/validate.go` and `pkg/chunkenc/interface.go`; Loki 3.6 lowercased
//! several of them (`Max entry size` → `max entry size`), so they are matched without regard to case.

/// Reasons Vigil reports rejected entries under (`vigil_loki_rejected_entries_total{reason}`).
pub const REASONS: &[&str] = &[
    "out_of_order",
    "too_far_behind",
    "too_old",
    "too_new",
    "line_too_long",
    "max_label_names",
    "label_name_too_long",
    "label_value_too_long",
    "duplicate_label_names",
    "invalid_labels",
    "rate_limited",
    "stream_limit",
    "structured_metadata",
    "other",
];

/// The reason of one Loki error message.
pub fn reason(message: &str) -> &'static str {
    let message = message.to_ascii_lowercase();
    let has = |needle: &str| message.contains(needle);
    if has("entry too far behind") {
        "too_far_behind"
    } else if has("entry out of order") {
        "out_of_order"
    } else if has("timestamp too old") {
        "too_old"
    } else if has("timestamp too new") {
        "too_new"
    } else if has("max entry size") {
        "line_too_long"
    } else if has("label names; limit") {
        "max_label_names"
    } else if has("label name too long") {
        "label_name_too_long"
    } else if has("label value too long") {
        "label_value_too_long"
    } else if has("duplicate label name") {
        "duplicate_label_names"
    } else if has("parsing labels") || has("parse labels") || has("label pair is required") {
        "invalid_labels"
    } else if has("rate limit exceeded") {
        "rate_limited"
    } else if has("active stream limit") {
        "stream_limit"
    } else if has("structured metadata") {
        "structured_metadata"
    } else {
        "other"
    }
}

/// Rejected entries of a 400 answer, by reason. `sent` is the number of entries in the push: a body naming no
/// count (a request Loki could not parse at all) rejected all of them.
pub fn rejections(body: &str, sent: u64) -> Vec<(&'static str, u64)> {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    let mut add = |reason: &'static str, n: u64| match counts.iter_mut().find(|(r, _)| *r == reason)
    {
        Some((_, count)) => *count += n,
        None => counts.push((reason, n)),
    };
    let body = body.trim();
    if let Some(summary) = body.lines().rev().find_map(ingester_summary) {
        // The ingester lists at most 10 entries, each with its reason; the summary has the total. Each listed
        // entry counts for its reason, and the entries beyond the list for the most frequent listed reason.
        let total = summary.min(sent);
        let mut listed = 0;
        for line in body.lines().filter(|line| line.contains("reason: '")) {
            add(reason(line), 1);
            listed += 1;
        }
        let rest = total.saturating_sub(listed);
        match counts.iter_mut().max_by_key(|(_, n)| *n) {
            Some((_, most_frequent)) => *most_frequent += rest,
            None => counts.push(("other", total)),
        }
    } else if body.is_empty() {
        add("other", sent);
    } else {
        let mut counted = 0;
        for group in groups(body) {
            let (n, message) = match group.split_once(" errors like: ") {
                Some((n, message)) => match n.trim().parse::<u64>() {
                    Ok(n) => (n, message),
                    Err(_) => (1, group),
                },
                None => (1, group),
            };
            let reason = reason(message);
            // A request Loki could not parse at all is refused whole.
            let n = if reason == "invalid_labels" && message.contains("couldn't parse labels") {
                sent
            } else {
                n
            };
            add(reason, n);
            counted += n;
        }
        if counted > sent {
            // More than was sent cannot have been rejected: Loki counted something else (or joined messages
            // that contain "; " themselves); scale down to what was sent.
            counts = vec![(counts.first().map_or("other", |(r, _)| r), sent)];
        }
    }
    counts
}

/// The groups of a `GroupedErrors` body. Groups are joined with `"; "`, which messages contain too
/// (`… has 16 label names; limit 15`), so a group boundary is a `"; "` followed by `"<n> errors like: "`; a body
/// that does not start with a count is one bare message.
fn groups(body: &str) -> Vec<&str> {
    let starts_group = |text: &str| {
        text.split_once(" errors like: ")
            .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if !starts_group(body) {
        return vec![body];
    }
    let mut groups = Vec::new();
    let mut start = 0;
    for (at, _) in body.match_indices("; ") {
        if starts_group(&body[at + 2..]) {
            groups.push(&body[start..at]);
            start = at + 2;
        }
    }
    groups.push(&body[start..]);
    groups
}

/// The total of an ingester body's last line: `user 'fake', total ignored: 2 out of 5 for stream: {…}`.
fn ingester_summary(line: &str) -> Option<u64> {
    let start = line.find("total ignored: ")? + "total ignored: ".len();
    let rest = &line[start..];
    let end = rest.find(' ')?;
    rest[..end].parse().ok()
}

/// Which limit a 429 hit, for the log: the tenant's ingestion rate, one stream's rate, or the number of streams.
pub fn rate_limit_scope(body: &str) -> &'static str {
    let lower = body.to_ascii_lowercase();
    if lower.contains("per stream rate limit") {
        "stream"
    } else if lower.contains("active stream limit") {
        "streams"
    } else {
        "tenant"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body Loki's ingester writes for 2 of 5 entries too far behind (shape of `errorForFailedEntries`,
    /// grafana/loki `pkg/ingester/stream.go`; Loki's own `stream_test.go` builds the same).
    const TOO_FAR_BEHIND: &str = "entry with timestamp 2025-06-01 10:00:00 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: 2025-06-01T10:00:00Z, oldest acceptable timestamp is: 2025-06-01T11:00:00Z',\n\
        entry with timestamp 2025-06-01 10:30:00 +0000 UTC ignored, reason: 'entry too far behind, entry timestamp is: 2025-06-01T10:30:00Z, oldest acceptable timestamp is: 2025-06-01T11:01:00Z',\n\
        user 'fake', total ignored: 2 out of 5 for stream: {foo=\"bar\", service_name=\"unknown_service\"}\n";

    #[test]
    fn ingester_bodies_count_the_total_by_reason() {
        assert_eq!(rejections(TOO_FAR_BEHIND, 5), [("too_far_behind", 2)]);
    }

    #[test]
    fn ingester_bodies_list_at_most_ten_but_the_total_counts() {
        let mut body = String::new();
        for _ in 0..10 {
            body.push_str("entry with timestamp x ignored, reason: 'entry too far behind, entry timestamp is: a, oldest acceptable timestamp is: b',\n");
        }
        body.push_str("user 'fake', total ignored: 40 out of 100 for stream: {a=\"b\"}");
        assert_eq!(rejections(&body, 100), [("too_far_behind", 40)]);
    }

    #[test]
    fn distributor_groups_are_counted() {
        // `GroupedErrors.Error()`: "<n> errors like: <msg>" joined with "; ".
        let body = "3 errors like: max entry size '256' bytes exceeded for stream '{a=\"b\"}' while adding an entry with length '300' bytes; \
                    1 errors like: entry for stream '{a=\"b\"}' has timestamp too old: 2020-01-01T00:00:00Z, oldest acceptable timestamp is: 2026-11-27T00:00:00Z\n";
        let mut counts = rejections(body, 10);
        counts.sort();
        assert_eq!(counts, [("line_too_long", 3), ("too_old", 1)]);
        // A single error is the bare message, in either case of Loki's wording.
        assert_eq!(
            rejections(
                "Max entry size '256' bytes exceeded for stream '{a=\"b\"}' while adding an entry with length '300' bytes",
                4
            ),
            [("line_too_long", 1)]
        );
        assert_eq!(
            rejections(
                "entry for stream '{a=\"b\", c=\"d\"}' has 16 label names; limit 15",
                4
            ),
            [("max_label_names", 1)]
        );
    }

    #[test]
    fn messages_containing_the_group_separator_stay_whole() {
        let body = "2 errors like: entry for stream '{a=\"b\"}' has 16 label names; limit 15; \
                    1 errors like: max entry size '30' bytes exceeded for stream '{a=\"b\"}' while adding an entry with length '45' bytes";
        let mut counts = rejections(body, 5);
        counts.sort();
        assert_eq!(counts, [("line_too_long", 1), ("max_label_names", 2)]);
    }

    #[test]
    fn ingester_bodies_with_several_reasons_count_each_listed_entry() {
        let body = "entry with timestamp a ignored, reason: 'entry too far behind, entry timestamp is: a, oldest acceptable timestamp is: b',\n\
                    entry with timestamp b ignored, reason: 'Per stream rate limit exceeded (limit: 3MB/sec) while attempting to ingest for stream '{a=\"b\"}' totaling 100B',\n\
                    entry with timestamp c ignored, reason: 'entry too far behind, entry timestamp is: c, oldest acceptable timestamp is: d',\n\
                    user 'fake', total ignored: 5 out of 9 for stream: {a=\"b\"}";
        let mut counts = rejections(body, 9);
        counts.sort();
        // 3 listed (2 + 1); the 2 beyond the list go to the most frequent reason.
        assert_eq!(counts, [("rate_limited", 1), ("too_far_behind", 4)]);
        // A summary without listed entries.
        assert_eq!(
            rejections(
                "user 'fake', total ignored: 2 out of 3 for stream: {a=\"b\"}",
                3
            ),
            [("other", 2)]
        );
        // Never more than was sent.
        assert_eq!(
            rejections(
                "user 'fake', total ignored: 20 out of 30 for stream: {a=\"b\"}",
                4
            ),
            [("other", 4)]
        );
    }

    #[test]
    fn grouped_counts_are_kept_when_they_add_up_and_capped_when_they_do_not() {
        let body = "2 errors like: entry for stream '{a=\"b\"}' has timestamp too old: x, oldest acceptable timestamp is: y; \
                    3 errors like: entry for stream '{a=\"b\"}' has timestamp too new: z";
        let mut counts = rejections(body, 5);
        counts.sort();
        assert_eq!(counts, [("too_new", 3), ("too_old", 2)]);
        // Loki cannot have refused more than was sent.
        assert_eq!(rejections(body, 4), [("too_old", 4)]);
        // A message with "; " inside a group stays in its group.
        let body = "2 errors like: a; b; 3 errors like: entry for stream '{a=\"b\"}' has timestamp too new: z";
        let mut counts = rejections(body, 9);
        counts.sort();
        assert_eq!(counts, [("other", 2), ("too_new", 3)]);
    }

    #[test]
    fn a_bare_message_starting_with_a_number_is_one_error() {
        assert_eq!(rejections("500 entries; 2 of them bad", 5), [("other", 1)]);
        // Only "couldn't parse labels" refuses the whole request; Loki's other label error is one stream's.
        assert_eq!(
            rejections(
                "error parsing labels '{a}' with error: 1:3: parse error: unexpected end of input",
                5
            ),
            [("invalid_labels", 1)]
        );
    }

    #[test]
    fn an_unparsable_request_rejects_everything() {
        assert_eq!(
            rejections(
                "couldn't parse labels: 1:4: parse error: unterminated quoted string",
                7
            ),
            [("invalid_labels", 7)]
        );
        assert_eq!(rejections("", 3), [("other", 3)]);
    }

    #[test]
    fn rate_limit_scopes_are_told_apart() {
        assert_eq!(
            rate_limit_scope(
                "ingestion rate limit exceeded for user fake (limit: 4194304 bytes/sec) while attempting to ingest '100' lines totaling '1000' bytes, reduce log volume or contact your Loki administrator to see if the limit can be increased"
            ),
            "tenant"
        );
        assert_eq!(
            rate_limit_scope(
                "entry with timestamp x ignored, reason: 'Per stream rate limit exceeded (limit: 3MB/sec) while attempting to ingest for stream '{a=\"b\"}' totaling 100B, consider splitting a stream via additional labels or contact your Loki administrator to see if the limit can be increased',\nuser 'fake', total ignored: 1 out of 1 for stream: {a=\"b\"}"
            ),
            "stream"
        );
        assert_eq!(
            rate_limit_scope(
                "maximum active stream limit exceeded when trying to create stream {a=\"b\"}, reduce the number of active streams (reduce labels or reduce label values), or contact your Loki administrator to see if the limit can be increased, user: 'fake'"
            ),
            "streams"
        );
        assert_eq!(reason("Per stream rate limit exceeded"), "rate_limited");
    }
}
