"""Prints, as JSON, what MLflow's own client sees of every run in one experiment.

    mlflow_inspect.py TRACKING_URI EXPERIMENT_NAME [--latest-only]

The Rust tests check the MLflow bridge through this script, never through Vigil's code: status and times from
`get_run`, params and tags, each metric's full history (`get_metric_history`), and the log artifacts
(`list_artifacts` + `download_artifacts`). With `--latest-only`, metrics are the latest values from `get_run`
(one call, for runs with thousands of keys).
"""

import json
import sys
import tempfile

import mlflow
from mlflow.tracking import MlflowClient


def main() -> None:
    uri, experiment_name = sys.argv[1], sys.argv[2]
    latest_only = "--latest-only" in sys.argv[3:]
    # MLflow 2.x resolves `mlflow-artifacts:` URIs against the global tracking URI, not the client's.
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        print(json.dumps({"experiment": None, "runs": []}))
        return
    runs = []
    for listed in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]):
        run = client.get_run(listed.info.run_id)
        metrics = {}
        for key in run.data.metrics:
            if latest_only:
                metrics[key] = run.data.metrics[key]
                continue
            history = client.get_metric_history(run.info.run_id, key)
            metrics[key] = [[m.step, m.value, m.timestamp] for m in history]
        logs = {}
        with tempfile.TemporaryDirectory() as directory:
            for artifact in client.list_artifacts(run.info.run_id, "logs"):
                local = client.download_artifacts(run.info.run_id, artifact.path, directory)
                with open(local, encoding="utf-8") as f:
                    logs[artifact.path] = f.read()
        runs.append(
            {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "status": run.info.status,
                "start_time": run.info.start_time,
                "end_time": run.info.end_time,
                "params": run.data.params,
                "tags": run.data.tags,
                "metrics": metrics,
                "logs": logs,
            }
        )
    print(json.dumps({"experiment": experiment.experiment_id, "runs": runs}))


if __name__ == "__main__":
    main()
