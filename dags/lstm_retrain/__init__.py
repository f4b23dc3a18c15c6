"""Helpers of the `lstm_nightly_retrain` DAG: settings, step command lines and the two launchers.

Not DAGs themselves (`.airflowignore` keeps the DAG processor out of this folder). Everything at
module level here is standard library only, so parsing the DAG stays cheap; `pods` imports the
Kubernetes provider and is imported only when the `kubernetes` launcher is configured.
"""
