"""Writes the Grafana dashboards of the local stack into configs/grafana/dashboards/ (one JSON file each, the
model Grafana's "Export > Save to file" writes, without `id`).

    python3 configs/grafana/generate.py            # rewrite the JSON files
    python3 configs/grafana/generate.py --check    # exit 1 if a JSON file differs from what this writes

Edit the dashboards here, not in Grafana (the provider refuses UI saves) and not in the JSON files:
tests/tests/stack.rs runs `--check`, then runs every query of every panel against a real Prometheus fed by the
example programs. Metric names are the ones the collector's `prometheus` exporter writes (OTel -> Prometheus
translation: `system.cpu.utilization` [1] is `system_cpu_utilization_ratio`); `job` is the service
(service.namespace/service.name), `instance` the process (service.instance.id); spanmetrics label the service
`service_name` and, like every metric, `job`, which the dashboards filter on. Loki queries use only the labels
the collector's `loki` exporter writes: `service_name`, the other default resource labels, and `level`; for a
service with a `service.namespace`, the `service` variable's `namespace/name` does not match Loki's
`service_name`, so the Errors dashboard's log panels show such services only with "All".
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "dashboards"
PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
LOKI = {"type": "loki", "uid": "${loki}"}
RATE = "$__rate_interval"


def datasource_variable(name="datasource", kind="prometheus", uid="prometheus", label="Prometheus"):
    return {
        "name": name,
        "label": label,
        "type": "datasource",
        "query": kind,
        "current": {"text": label, "value": uid},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(name, label, query, all_value=".*", multi=True):
    """A Prometheus `label_values(...)` variable, all values selected by default."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROMETHEUS,
        "query": {"query": query, "refId": f"{name}-values", "qryType": 1},
        "definition": query,
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": True,
        "allValue": all_value,
        "current": {"text": ["All"], "value": ["$__all"]},
        "hide": 0,
        "options": [],
        "regex": "",
    }


def textbox_variable(name, label, value, description):
    return {
        "name": name,
        "label": label,
        "type": "textbox",
        "query": value,
        "current": {"text": value, "value": value},
        "description": description,
        "hide": 0,
        "options": [],
    }


def prom(expr, legend="__auto", instant=False, exemplar=False, fmt=None):
    target = {"datasource": PROMETHEUS, "expr": expr, "legendFormat": legend, "range": not instant,
              "instant": instant, "exemplar": exemplar, "editorMode": "code"}
    if fmt:
        target["format"] = fmt
    return target


def loki(expr, legend="__auto", kind="range"):
    return {"datasource": LOKI, "expr": expr, "legendFormat": legend, "queryType": kind, "editorMode": "code"}


def thresholds(*steps):
    """Green below the first value, then orange, then red."""
    colors = ["orange", "red"]
    out = [{"color": "green", "value": None}]
    for color, value in zip(colors, steps):
        out.append({"color": color, "value": value})
    return {"mode": "absolute", "steps": out}


def panel(kind, title, targets, unit, description, w=12, h=8, thresholds_=None, minimum=None, maximum=None,
          options=None, custom=None, overrides=None, mappings=None, links=None, transformations=None):
    defaults = {"unit": unit, "custom": custom or {}, "mappings": mappings or []}
    if thresholds_:
        defaults["thresholds"] = thresholds_
        defaults["color"] = {"mode": "thresholds"} if kind in ("stat", "gauge", "bargauge") else \
            {"mode": "palette-classic"}
    else:
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None}]}
        defaults["color"] = {"mode": "palette-classic"}
    if minimum is not None:
        defaults["min"] = minimum
    if maximum is not None:
        defaults["max"] = maximum
    if links:
        defaults["links"] = links
    for ref, target in zip("ABCDEFGH", targets):
        target["refId"] = ref
    out = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "gridPos": {"w": w, "h": h},
    }
    if transformations:
        out["transformations"] = transformations
    return out


def timeseries(title, targets, unit, description, **kw):
    kw.setdefault("options", {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                              "tooltip": {"mode": "multi", "sort": "desc"}})
    kw.setdefault("custom", {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                             "spanNulls": True})
    return panel("timeseries", title, targets, unit, description, **kw)


def stat(title, targets, unit, description, w=6, h=4, **kw):
    kw.setdefault("options", {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                              "colorMode": "value", "graphMode": "area", "textMode": "auto"})
    return panel("stat", title, targets, unit, description, w=w, h=h, **kw)


def table(title, targets, unit, description, **kw):
    kw.setdefault("options", {"showHeader": True, "cellHeight": "sm"})
    kw.setdefault("transformations", [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {"Time": True}}},
    ])
    return panel("table", title, targets, unit, description, **kw)


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24, "h": 1}}


def dashboard(uid, title, description, tags, variables, panels, links=()):
    """Lays the panels out left to right, 24 columns wide, a row starting a new line."""
    x = y = line_height = 0
    for number, item in enumerate(panels, start=1):
        item["id"] = number
        grid = item["gridPos"]
        if item["type"] == "row" or x + grid["w"] > 24:
            y += line_height
            x = line_height = 0
        grid["x"], grid["y"] = x, y
        x += grid["w"]
        line_height = max(line_height, grid["h"])
        if item["type"] == "row":
            y += 1
            x = line_height = 0
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["vigil"] + tags,
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {"list": [{
            "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
            "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard",
        }]},
        "links": [dict({"type": "dashboards", "tags": ["vigil"], "asDropdown": True, "title": "Vigil dashboards",
                        "includeVars": False, "keepTime": True, "icon": "external link", "targetBlank": False,
                        "tooltip": "", "url": ""})] + list(links),
        "templating": {"list": variables},
        "panels": panels,
    }


def link(title, url):
    return {"type": "link", "title": title, "url": url, "targetBlank": True, "icon": "external link",
            "asDropdown": False, "includeVars": False, "keepTime": False, "tags": [], "tooltip": ""}


SERVICE = query_variable("service", "Service", "label_values(target_info, job)")


# --- System resources ---------------------------------------------------------------------------------------

def system():
    sel = 'job=~"$service", instance=~"$instance"'
    return dashboard(
        "vigil-system", "System resources",
        "CPU, memory, swap, disks, network, the process and every GPU, as the Vigil SDK reports them "
        "(system.*, process.*, hw.gpu.*). `instance` is one process (service.instance.id).",
        ["system", "gpu"],
        [datasource_variable(), SERVICE,
         query_variable("instance", "Process", 'label_values(system_cpu_logical_count{job=~"$service"}, instance)')],
        [
            row("CPU"),
            timeseries("CPU busy", [prom(f'system_cpu_utilization_ratio{{{sel}, cpu_logical_number=""}}',
                                         "{{job}} {{instance}}")],
                       "percentunit", "Fraction of time all CPUs were busy.", w=8, minimum=0, maximum=1,
                       thresholds_=thresholds(0.8, 0.95)),
            timeseries("CPU busy per core", [prom(f'system_cpu_utilization_ratio{{{sel}, cpu_logical_number!=""}}',
                                                  "cpu {{cpu_logical_number}} {{instance}}")],
                       "percentunit", "Each logical CPU's busy fraction.", w=8, minimum=0, maximum=1),
            timeseries("Load average", [prom(f"system_cpu_load_average_1m{{{sel}}}", "1m {{instance}}"),
                                        prom(f"system_cpu_load_average_5m{{{sel}}}", "5m {{instance}}"),
                                        prom(f"system_cpu_load_average_15m{{{sel}}}", "15m {{instance}}")],
                       "short", "Runnable threads averaged over 1, 5 and 15 minutes; compare with the CPU count.",
                       w=5),
            stat("Logical CPUs", [prom(f"max(system_cpu_logical_count{{{sel}}})", instant=True)], "short",
                 "Logical CPUs of the host.", w=3, h=8),
            row("Memory"),
            timeseries("Memory used", [prom(f'system_memory_usage_bytes{{{sel}, system_memory_state="used"}}',
                                            "used {{instance}}"),
                                       prom(f"system_memory_limit_bytes{{{sel}}}", "total {{instance}}")],
                       "bytes", "Memory in use and in total.", w=9),
            timeseries("Memory utilisation", [prom(f"system_memory_utilization_ratio{{{sel}}}", "{{instance}}")],
                       "percentunit", "Fraction of memory in use.", w=6, minimum=0, maximum=1,
                       thresholds_=thresholds(0.8, 0.9)),
            timeseries("Swap used", [prom(f'system_paging_usage_bytes{{{sel}, system_paging_state="used"}}',
                                          "{{instance}}")],
                       "bytes", "Swap in use.", w=9),
            row("Disk"),
            timeseries("File system used", [prom(f"system_filesystem_utilization_ratio{{{sel}}}",
                                                 "{{system_filesystem_mountpoint}} {{instance}}")],
                       "percentunit", "Fraction of each mounted file system in use.", w=8, minimum=0, maximum=1,
                       thresholds_=thresholds(0.8, 0.9)),
            timeseries("File system free", [prom(f'system_filesystem_usage_bytes{{{sel}, system_filesystem_state="free"}}',
                                                 "{{system_filesystem_mountpoint}} {{instance}}")],
                       "bytes", "Free space of each mounted file system.", w=8),
            timeseries("Disk I/O", [prom(f"sum by (instance, system_device, disk_io_direction) "
                                         f"(rate(system_disk_io_bytes_total{{{sel}}}[{RATE}]))",
                                         "{{system_device}} {{disk_io_direction}} {{instance}}")],
                       "Bps", "Bytes read and written per second, per disk.", w=8),
            row("Network"),
            timeseries("Network traffic", [prom(f"sum by (instance, network_interface_name, network_io_direction) "
                                                f'(rate(system_network_io_bytes_total{{{sel}, network_interface_name!="lo"}}[{RATE}]))',
                                                "{{network_interface_name}} {{network_io_direction}} {{instance}}")],
                       "Bps", "Bytes received and sent per second, per interface (loopback left out).", w=12),
            timeseries("Network errors", [prom(f"sum by (instance, network_interface_name) "
                                               f"(rate(system_network_errors_total{{{sel}}}[{RATE}]))",
                                               "{{network_interface_name}} {{instance}}")],
                       "cps", "Receive and transmit errors per second, per interface.", w=12,
                       thresholds_=thresholds(0.01, 1)),
            row("Process"),
            timeseries("Process CPU", [prom(f"process_cpu_utilization_ratio{{{sel}}}", "{{job}} {{instance}}")],
                       "percentunit", "The process's CPU use as a fraction of all CPUs.", w=6, minimum=0),
            timeseries("Process memory", [prom(f"process_memory_usage_bytes{{{sel}}}", "{{job}} {{instance}}")],
                       "bytes", "The process's resident memory.", w=6),
            timeseries("Threads", [prom(f"process_thread_count{{{sel}}}", "{{job}} {{instance}}")],
                       "short", "The process's threads.", w=6),
            timeseries("Open files", [prom(f"process_unix_file_descriptor_count{{{sel}}}", "{{job}} {{instance}}")],
                       "short", "The process's open file descriptors.", w=6),
            row("GPU"),
            timeseries("GPU utilisation", [prom(f'hw_gpu_utilization_ratio{{{sel}, hw_gpu_task="general"}}',
                                                "GPU {{gpu_index}} {{hw_name}} {{instance}}")],
                       "percentunit", "Fraction of time a kernel ran on each GPU (NVML).", w=8, minimum=0,
                       maximum=1, thresholds_=thresholds(0.9, 0.98)),
            timeseries("GPU memory used", [prom(f'hw_gpu_memory_usage_bytes{{{sel}, hw_gpu_memory_state="used"}}',
                                                "used GPU {{gpu_index}} {{instance}}"),
                                           prom(f"hw_gpu_memory_limit_bytes{{{sel}}}", "total GPU {{gpu_index}} {{instance}}")],
                       "bytes", "Device memory in use and in total, per GPU.", w=8),
            timeseries("GPU memory bandwidth", [prom(f'hw_gpu_utilization_ratio{{{sel}, hw_gpu_task="memory"}}',
                                                     "GPU {{gpu_index}} {{instance}}")],
                       "percentunit", "Fraction of time device memory was read or written, per GPU.", w=8,
                       minimum=0, maximum=1),
            timeseries("GPU temperature", [prom(f"hw_gpu_temperature_celsius{{{sel}}}", "GPU {{gpu_index}} {{instance}}")],
                       "celsius", "Die temperature per GPU.", w=8, thresholds_=thresholds(80, 90)),
            timeseries("GPU power", [prom(f"hw_gpu_power_watts{{{sel}}}", "draw GPU {{gpu_index}} {{instance}}"),
                                     prom(f"hw_gpu_power_limit_watts{{{sel}}}", "limit GPU {{gpu_index}} {{instance}}")],
                       "watt", "Power draw and enforced limit per GPU.", w=8),
            timeseries("GPU clocks", [prom(f"hw_gpu_clock_MHz{{{sel}}}", "{{hw_gpu_clock_type}} GPU {{gpu_index}} {{instance}}")],
                       "rotmhz", "Graphics, SM and memory clocks per GPU.", w=8),
        ],
    )


# --- ML training --------------------------------------------------------------------------------------------

def training():
    run = 'job=~"$service", experiment_id=~"$experiment", instance=~"$instance"'
    process = 'job=~"$service", instance=~"$instance"'
    status_code = (f'sum by (job, instance) (training_status{{{run}, status="running"}}) '
                   f'+ 2 * sum by (job, instance) (training_status{{{run}, status="completed"}}) '
                   f'+ 3 * sum by (job, instance) (training_status{{{run}, status="failed"}})')
    status_mappings = [{"type": "value", "options": {
        "1": {"text": "running", "color": "blue", "index": 0},
        "2": {"text": "completed", "color": "green", "index": 1},
        "3": {"text": "failed", "color": "red", "index": 2}}}]
    mlflow_link = [{"title": "Open the run in MLflow", "targetBlank": True,
                    "url": "${mlflow_url}/#/experiments/${__data.fields.mlflow_experiment_id}/runs/"
                           "${__data.fields.mlflow_run_id}"}]
    return dashboard(
        "vigil-ml-training", "ML training",
        "Training runs reported by the Vigil SDK's TrainingRun (training.* metrics): status, loss and the values "
        "logged each epoch, epoch time, throughput, and the GPUs during the run. Each run is one process "
        "(`instance`); the Runs table links to the run in MLflow.",
        ["ml", "mlflow"],
        [datasource_variable(), query_variable("service", "Service", "label_values(training_status, job)"),
         query_variable("experiment", "Experiment", 'label_values(training_status{job=~"$service"}, experiment_id)'),
         query_variable("instance", "Run (process)",
                        'label_values(training_status{job=~"$service", experiment_id=~"$experiment"}, instance)'),
         textbox_variable("mlflow_url", "MLflow", "http://localhost:5000",
                          "MLflow's address as the browser reaches it, for the links to runs.")],
        [
            # last_over_time: a finished run's series expire from the collector (metric_expiration) soon after
            # its process exits; the table keeps listing it for the whole time range.
            table("Runs", [prom(f"max by (job, instance, experiment_id, model, status) "
                                f"(last_over_time(training_status{{{run}}}[$__range]) == 1)", instant=True, fmt="table"),
                           prom(f"max by (job, instance, experiment_id) (last_over_time(training_epoch{{{run}}}[$__range]))",
                                instant=True, fmt="table"),
                           prom(f"max by (job, instance, experiment_id) (last_over_time(training_loss{{{run}}}[$__range]))",
                                instant=True, fmt="table"),
                           prom('max by (instance, mlflow_experiment_id, mlflow_run_id) (label_replace(last_over_time('
                                'vigil_mlflow_run_info{service_instance_id=~"$instance"}[$__range]), '
                                '"instance", "$1", "service_instance_id", "(.+)"))', instant=True, fmt="table")],
                  "short", "One line per run: its state, last epoch and loss, and a link to its MLflow page "
                           "(the collector's mlflow exporter reports which MLflow run each process writes to).",
                  w=24, h=7, links=mlflow_link,
                  overrides=[{"matcher": {"id": "byName", "options": "status"},
                              "properties": [{"id": "mappings", "value": [{"type": "value", "options": {
                                  "running": {"color": "blue", "index": 0},
                                  "completed": {"color": "green", "index": 1},
                                  "failed": {"color": "red", "index": 2}}}]},
                                  {"id": "custom.cellOptions", "value": {"type": "color-background"}}]}],
                  transformations=[
                      {"id": "merge", "options": {}},
                      {"id": "organize", "options": {
                          "excludeByName": {"Time": True, "Value #A": True},
                          "renameByName": {"Value #B": "epoch", "Value #C": "loss"}}}]),
            panel("state-timeline", "Run status", [prom(status_code, "{{job}} {{instance}}")], "short",
                  "running, completed or failed over time, per run (the training.status state set).",
                  w=24, h=6, mappings=status_mappings,
                  options={"showValue": "auto", "mergeValues": True, "rowHeight": 0.8,
                           "legend": {"showLegend": False}}),
            timeseries("Loss", [prom(f"training_loss{{{run}}}", "{{instance}}")], "short",
                       "The loss each run logged at its last epoch.", w=12),
            timeseries("Values logged per epoch",
                       [prom('{__name__=~"training_.+", __name__!~"training_(status|epoch|epochs_total|samples_total|'
                             'samples_per_second|duration_seconds_.+|epoch_duration_seconds_.+)", '
                             f"{run}}}", "{{__name__}} {{instance}}")],
                       "short", "Every named value the runs log with each epoch (TrainingRun::epoch), "
                                "loss included.", w=12),
            timeseries("Epoch", [prom(f"training_epoch{{{run}}}", "{{instance}}")], "short",
                       "The epoch each run has reached.", w=6),
            timeseries("Epoch duration", [
                prom(f"training_epoch_duration_seconds_sum{{{process}}} / training_epoch_duration_seconds_count{{{process}}}",
                     "mean {{instance}}"),
                prom(f"histogram_quantile(0.95, sum by (instance, le) (training_epoch_duration_seconds_bucket{{{process}}}))",
                     "p95 {{instance}}")],
                       "s", "Mean and 95th percentile of each run's epoch durations so far.", w=6),
            timeseries("Throughput", [prom(f"training_samples_per_second{{{run}}}", "{{instance}}")],
                       "suffix: samples/s", "Samples per second over the last epoch.", w=6),
            timeseries("Samples", [prom(f"training_samples_total{{{run}}}", "{{instance}}")], "short",
                       "Samples processed by each run.", w=6),
            timeseries("GPU utilisation during the run",
                       [prom(f'hw_gpu_utilization_ratio{{{process}, hw_gpu_task="general"}}',
                             "GPU {{gpu_index}} {{instance}}")],
                       "percentunit", "Each GPU the training processes see (CUDA_VISIBLE_DEVICES).", w=12,
                       minimum=0, maximum=1, thresholds_=thresholds(0.9, 0.98)),
            timeseries("GPU memory during the run",
                       [prom(f'hw_gpu_memory_usage_bytes{{{process}, hw_gpu_memory_state="used"}}',
                             "GPU {{gpu_index}} {{instance}}")],
                       "bytes", "Device memory in use per GPU.", w=12),
            timeseries("Run duration", [
                prom(f"training_duration_seconds_sum{{{process}}} / training_duration_seconds_count{{{process}}}",
                     "{{instance}}")],
                       "s", "Wall-clock time of finished runs.", w=12),
            timeseries("Training errors", [prom(f"sum by (instance, error_type) (errors_total{{{process}}})",
                                                "{{error_type}} {{instance}}")],
                       "short", "Errors the training processes recorded (vigil::record_error, TrainingRun::fail).",
                       w=12, thresholds_=thresholds(1)),
        ],
        links=[link("MLflow", "${mlflow_url}")],
    )


# --- Backtests ----------------------------------------------------------------------------------------------

def backtests():
    sel = 'job=~"$service", strategy=~"$strategy"'
    results = ["pnl", "trades", "sharpe", "max_drawdown"]
    return dashboard(
        "vigil-backtests", "Backtests",
        "Results per strategy from vigil::record_backtest: PnL, trades, Sharpe ratio, maximum drawdown and "
        "duration.",
        ["backtest"],
        [datasource_variable(), query_variable("service", "Service", "label_values(backtests_total, job)"),
         query_variable("strategy", "Strategy", 'label_values(backtests_total{job=~"$service"}, strategy)')],
        [
            table("Results per strategy",
                  [prom(f"max by (strategy) (backtest_{name}{{{sel}}})", instant=True, fmt="table")
                   for name in results]
                  + [prom(f"max by (strategy) (backtest_duration_seconds_sum{{{sel}}} / "
                          f"backtest_duration_seconds_count{{{sel}}})", instant=True, fmt="table"),
                     prom(f"sum by (strategy) (backtests_total{{{sel}}})", instant=True, fmt="table")],
                  "short", "The latest result of each strategy.", w=24, h=7,
                  transformations=[
                      {"id": "merge", "options": {}},
                      {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": {
                          "Value #A": "PnL", "Value #B": "trades", "Value #C": "Sharpe",
                          "Value #D": "max drawdown", "Value #E": "duration (s)", "Value #F": "runs"}}}]),
            timeseries("PnL", [prom(f"backtest_pnl{{{sel}}}", "{{strategy}}")], "short",
                       "Profit and loss of each strategy's latest backtest.", w=12,
                       thresholds_={"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                                  {"color": "green", "value": 0}]}),
            timeseries("Trades", [prom(f"backtest_trades{{{sel}}}", "{{strategy}}")], "short",
                       "Trades of each strategy's latest backtest.", w=12),
            timeseries("Sharpe ratio", [prom(f"backtest_sharpe{{{sel}}}", "{{strategy}}")], "short",
                       "Mean return over its standard deviation.", w=8),
            timeseries("Maximum drawdown", [prom(f"backtest_max_drawdown{{{sel}}}", "{{strategy}}")], "short",
                       "The worst return of the backtest (negative).", w=8),
            timeseries("Duration", [prom(f"backtest_duration_seconds_sum{{{sel}}} / backtest_duration_seconds_count{{{sel}}}",
                                         "{{strategy}}")],
                       "s", "Mean time a backtest of the strategy took.", w=8),
        ],
    )


# --- Service RED --------------------------------------------------------------------------------------------

def red():
    # `job` (service.namespace/service.name) on spanmetrics and the HTTP metrics alike.
    span = 'job=~"$service"'
    server = f'{span}, span_kind="SPAN_KIND_SERVER"'
    route = 'job=~"$service", http_route=~"$route"'
    calls = "traces_span_metrics_calls_total"
    http = "http_server_request_duration_seconds"

    def ratio(errors, total, by):
        return (f"(sum by ({by}) (rate({errors}[{RATE}])) or 0 * sum by ({by}) (rate({total}[{RATE}]))) "
                f"/ sum by ({by}) (rate({total}[{RATE}]))")

    def quantiles(metric, sel, by, legend):
        return [prom(f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}[{RATE}])))",
                     f"p{int(q * 100)} {legend}", exemplar=True) for q in (0.5, 0.95, 0.99)]

    return dashboard(
        "vigil-red", "Service RED",
        "Rate, errors and duration per service from spans (the collector's spanmetrics connector) and per route "
        "from http.server.request.duration. Latency panels show exemplars: click one to open its trace in Jaeger.",
        ["red", "traces"],
        [datasource_variable(),
         query_variable("service", "Service", f"label_values({calls}, job)"),
         query_variable("route", "Route", f'label_values({http}_count{{job=~"$service"}}, http_route)')],
        [
            row("From spans (spanmetrics)"),
            timeseries("Requests", [prom(f"sum by (job) (rate({calls}{{{server}}}[{RATE}]))",
                                         "{{job}}")],
                       "reqps", "Server spans per second, per service.", w=8),
            timeseries("Error ratio", [prom(ratio(f'{calls}{{{span}, status_code="STATUS_CODE_ERROR"}}',
                                                  f"{calls}{{{span}}}", "job"), "{{job}}")],
                       "percentunit", "Fraction of spans that ended with status ERROR, per service.", w=8,
                       minimum=0, thresholds_=thresholds(0.01, 0.05)),
            timeseries("Server latency", quantiles("traces_span_metrics_duration_seconds", server, "job",
                                                   "{{job}}"),
                       "s", "p50, p95 and p99 of server span durations, per service.", w=8,
                       thresholds_=thresholds(0.5, 1)),
            table("Operations", [
                prom(f"sum by (job, span_name, span_kind) (rate({calls}{{{span}}}[{RATE}]))", instant=True,
                     fmt="table"),
                prom(ratio(f'{calls}{{{span}, status_code="STATUS_CODE_ERROR"}}', f"{calls}{{{span}}}",
                           "job, span_name, span_kind"), instant=True, fmt="table"),
                prom(f"histogram_quantile(0.95, sum by (job, span_name, span_kind, le) "
                     f"(rate(traces_span_metrics_duration_seconds_bucket{{{span}}}[{RATE}])))", instant=True,
                     fmt="table")],
                  "short", "Per operation: calls per second, error ratio and p95 duration.", w=24, h=8,
                  transformations=[
                      {"id": "merge", "options": {}},
                      {"id": "organize", "options": {"excludeByName": {"Time": True}, "renameByName": {
                          "Value #A": "calls/s", "Value #B": "error ratio", "Value #C": "p95 (s)"}}}]),
            row("From http.server.request.duration"),
            timeseries("Requests per route", [prom(f"sum by (job, http_route) (rate({http}_count{{{route}}}[{RATE}]))",
                                                   "{{job}} {{http_route}}")],
                       "reqps", "HTTP requests per second, per service and route.", w=8),
            timeseries("5xx ratio per route", [prom(ratio(f'{http}_count{{{route}, http_response_status_code=~"5.."}}',
                                                          f"{http}_count{{{route}}}", "job, http_route"),
                                                    "{{job}} {{http_route}}")],
                       "percentunit", "Fraction of requests answered with a 5xx status.", w=8, minimum=0,
                       thresholds_=thresholds(0.01, 0.05)),
            timeseries("Latency per route", quantiles(http, route, "job, http_route", "{{job}} {{http_route}}"),
                       "s", "p50, p95 and p99 request duration per route.", w=8, thresholds_=thresholds(0.5, 1)),
            timeseries("Responses by status", [prom(f"sum by (http_response_status_code) (rate({http}_count{{{route}}}[{RATE}]))",
                                                    "{{http_response_status_code}}")],
                       "reqps", "Responses per second by status code.", w=24, h=6),
        ],
    )


# --- Errors -------------------------------------------------------------------------------------------------

def errors():
    levels = 'level=~"error|critical|fatal"'
    return dashboard(
        "vigil-errors", "Errors",
        "Errors from every signal: the SDK's `errors` counter by type, spans that ended in error, and ERROR / "
        "CRITICAL log records in Loki, each with a link to its trace.",
        ["errors", "logs"],
        [datasource_variable(), datasource_variable("loki", "loki", "loki", "Loki"), SERVICE],
        [
            timeseries("Errors by type", [prom('sum by (job, error_type) (rate(errors_total{job=~"$service"}'
                                               f"[{RATE}]))", "{{job}} {{error_type}}")],
                       "cps", "Errors recorded per second (vigil::record_error and friends), by service and type.",
                       w=12),
            panel("bargauge", "Top error types",
                  [prom('topk(10, sum by (error_type) (max_over_time(errors_total{job=~"$service"}[$__range])))',
                        "{{error_type}}", instant=True)],
                  "short", "The ten most frequent error types, totals of the processes seen in the time range.",
                  w=12, options={"orientation": "horizontal", "displayMode": "gradient",
                                 "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}},
                  thresholds_=thresholds(1, 10)),
            timeseries("Error spans", [prom('sum by (job, span_name) (rate(traces_span_metrics_calls_total'
                                            f'{{job=~"$service", status_code="STATUS_CODE_ERROR"}}[{RATE}]))',
                                            "{{job}} {{span_name}}")],
                       "cps", "Spans per second that ended with status ERROR, by service and operation.", w=12),
            timeseries("Error log records",
                       [loki(f'sum by (service_name, level) (count_over_time({{service_name=~"$service", {levels}}} '
                             "[$__auto]))", "{{service_name}} {{level}}")],
                       "short", "ERROR, CRITICAL and FATAL log records per interval (Loki).", w=12),
            panel("logs", "Error logs", [loki(f'{{service_name=~"$service", {levels}}}', kind="range")], "short",
                  "The error log records themselves; a record's trace_id opens its trace in Jaeger.", w=24, h=12,
                  options={"showTime": True, "wrapLogMessage": True, "enableLogDetails": True,
                           "sortOrder": "Descending", "dedupStrategy": "none", "prettifyLogMessage": False}),
        ],
    )


# --- Collector ----------------------------------------------------------------------------------------------

def collector():
    sel = 'job=~"$job"'
    return dashboard(
        "vigil-collector", "Collector",
        "The Vigil collector's own metrics (:8888): what the receivers accepted, refused or found invalid, what "
        "each exporter sent, dropped (by reason) and retried, queue fill, masking, sampling and alert "
        "notifications.",
        ["collector"],
        [datasource_variable(),
         query_variable("job", "Collector job", "label_values(vigil_receiver_accepted_items_total, job)")],
        [
            row("Receivers"),
            timeseries("Accepted items", [prom(f"sum by (receiver, transport, signal) "
                                               f"(rate(vigil_receiver_accepted_items_total{{{sel}}}[{RATE}]))",
                                               "{{receiver}} {{transport}} {{signal}}")],
                       "short", "Spans, data points and log records accepted per second.", w=8),
            timeseries("Refused items", [prom(f"sum by (receiver, signal, reason) "
                                              f"(rate(vigil_receiver_refused_items_total{{{sel}}}[{RATE}]))",
                                              "{{receiver}} {{signal}} {{reason}}")],
                       "short", "Items refused per second, by reason: the client was told to retry (or not).",
                       w=8, thresholds_=thresholds(1)),
            timeseries("Invalid requests", [prom(f"sum by (receiver, transport, signal) "
                                                 f"(rate(vigil_receiver_invalid_requests_total{{{sel}}}[{RATE}]))",
                                                 "{{receiver}} {{transport}} {{signal}}")],
                       "reqps", "Requests that could not be decoded, per second.", w=8, thresholds_=thresholds(0.1)),
            row("Exporters"),
            timeseries("Sent items", [prom(f"sum by (exporter) (rate(vigil_exporter_sent_items_total{{{sel}}}[{RATE}]))",
                                           "{{exporter}}")],
                       "short", "Items each exporter delivered per second.", w=8),
            timeseries("Dropped items", [prom(f"sum by (exporter, reason) "
                                              f"(rate(vigil_exporter_dropped_items_total{{{sel}}}[{RATE}]))",
                                              "{{exporter}} {{reason}}")],
                       "short", "Items each exporter gave up on per second, by reason.", w=8,
                       thresholds_=thresholds(0.01)),
            timeseries("Retries", [prom(f"sum by (exporter) (rate(vigil_exporter_retries_total{{{sel}}}[{RATE}]))",
                                        "{{exporter}}")],
                       "short", "Export attempts retried per second.", w=8),
            timeseries("Exporter queue fill", [prom(f"max by (exporter) (vigil_exporter_queue_size{{{sel}}} / "
                                                    f"vigil_exporter_queue_capacity{{{sel}}})", "{{exporter}}")],
                       "percentunit", "Fraction of each sending queue in use; at 100 % receivers refuse.", w=8,
                       minimum=0, maximum=1, thresholds_=thresholds(0.5, 0.8)),
            timeseries("Batch queue fill", [prom(f"max by (processor, pipeline) (vigil_processor_queue_size{{{sel}}} / "
                                                 f"vigil_processor_queue_capacity{{{sel}}})", "{{pipeline}} {{processor}}")],
                       "percentunit", "Fraction of each batch processor's queue in use.", w=8, minimum=0, maximum=1,
                       thresholds_=thresholds(0.5, 0.8)),
            timeseries("In flight", [prom(f"sum by (exporter) (vigil_exporter_in_flight_items{{{sel}}})", "{{exporter}}")],
                       "short", "Items being sent right now, per exporter.", w=8),
            row("Processing"),
            timeseries("Mask replacements", [prom(f"sum by (detector) (rate(vigil_mask_replacements_total{{{sel}}}[{RATE}]))",
                                                  "{{detector}}")],
                       "short", "Secrets and personal data replaced per second, by detector.", w=8),
            timeseries("Sampling decisions", [prom(f"sum by (decision) "
                                                   f"(rate(vigil_processor_probabilistic_sampler_spans_total{{{sel}}}[{RATE}]))",
                                                   "sampled={{decision}}")],
                       "short", "Spans kept (true) and dropped (false) per second by the probabilistic sampler.",
                       w=8),
            timeseries("Batches sent", [prom(f"sum by (pipeline, trigger) "
                                             f"(rate(vigil_processor_batch_sends_total{{{sel}}}[{RATE}]))",
                                             "{{pipeline}} {{trigger}}")],
                       "short", "Batches per second, by what sent them (size, timeout, shutdown).", w=8),
            row("Alerting"),
            timeseries("Alert notifications", [prom(f"sum by (channel, result) "
                                                    f"(rate(vigil_alert_notifications_total{{{sel}}}[{RATE}]))",
                                                    "{{channel}} {{result}}")],
                       "short", "Notification attempts per second, by channel and result.", w=12),
            timeseries("Rule evaluation time", [prom(f"max by (rule_group) (vigil_alert_rule_group_last_duration_seconds{{{sel}}})",
                                                     "{{rule_group}}")],
                       "s", "Time the last evaluation of each rule group took.", w=12,
                       thresholds_=thresholds(1, 5)),
        ],
    )


# --- Alerts -------------------------------------------------------------------------------------------------

def alerts():
    return dashboard(
        "vigil-alerts", "Alerts",
        "Alerts Prometheus evaluates (the RED rules and the seed rules, which the collector evaluates too), the "
        "notifications the collector sent to Alertmanager and those Alertmanager sent on, by channel and result.",
        ["alerts"],
        [datasource_variable(),
         textbox_variable("alertmanager_url", "Alertmanager", "http://localhost:9093",
                          "Alertmanager's address as the browser reaches it.")],
        [
            stat("Firing", [prom('count(ALERTS{alertstate="firing"}) or vector(0)', instant=True)], "short",
                 "Alerts firing now.", w=6, thresholds_=thresholds(1, 5)),
            stat("Pending", [prom('count(ALERTS{alertstate="pending"}) or vector(0)', instant=True)], "short",
                 "Alerts whose condition holds but not yet for their `for` duration.", w=6,
                 thresholds_=thresholds(1, 10)),
            stat("Notifications failed", [prom('sum(increase(vigil_alert_notifications_total{result!="success"}[$__range])) '
                                               'or vector(0)', instant=True)],
                 "short", "Notification attempts that did not succeed in the time range.", w=12,
                 thresholds_=thresholds(1, 10)),
            table("Active alerts", [prom("ALERTS", instant=True, fmt="table")], "short",
                  "Every firing or pending alert with its labels.", w=24, h=8,
                  transformations=[{"id": "organize", "options": {
                      "excludeByName": {"Time": True, "Value": True, "__name__": True}}}],
                  links=[{"title": "Open in Alertmanager", "targetBlank": True,
                          "url": "${alertmanager_url}/#/alerts?filter=%7Balertname%3D%22${__data.fields.alertname}%22%7D"}]),
            panel("state-timeline", "Alert states", [prom('max by (alertname, job) (ALERTS{alertstate="firing"}) * 2 '
                                                           'or max by (alertname, job) (ALERTS{alertstate="pending"})',
                                                           "{{alertname}} {{job}}")],
                  "short", "When each alert was pending and firing.", w=24, h=8,
                  mappings=[{"type": "value", "options": {"1": {"text": "pending", "color": "orange", "index": 0},
                                                           "2": {"text": "firing", "color": "red", "index": 1}}}],
                  options={"showValue": "never", "mergeValues": True, "legend": {"showLegend": False}}),
            timeseries("Collector notifications", [prom("sum by (channel, result) "
                                                        f"(rate(vigil_alert_notifications_total[{RATE}]))",
                                                        "{{channel}} {{result}}")],
                       "short", "The collector's notification attempts per second, by channel and result.", w=12),
            timeseries("Alertmanager notifications", [
                prom(f"sum by (integration) (rate(alertmanager_notifications_total[{RATE}]))", "sent {{integration}}"),
                prom(f"sum by (integration) (rate(alertmanager_notifications_failed_total[{RATE}]))",
                     "failed {{integration}}")],
                       "short", "What Alertmanager sent per second, by integration (email, slack, webhook), and "
                                "what failed.", w=12, thresholds_=thresholds(0.01)),
        ],
        links=[link("Alertmanager", "${alertmanager_url}")],
    )


DASHBOARDS = {
    "system.json": system,
    "ml-training.json": training,
    "backtests.json": backtests,
    "red.json": red,
    "errors.json": errors,
    "collector.json": collector,
    "alerts.json": alerts,
}


def main():
    check = "--check" in sys.argv[1:]
    stale = []
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"configs/grafana/dashboards: {', '.join(stale)} differ from generate.py; "
              "run `python3 configs/grafana/generate.py`", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
