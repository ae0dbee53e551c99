"""What a run shows: the preflight, telemetry, evaluation metrics, plots and the HTML report."""
