"""Command-line tools: feed the pipeline without the app, run the demo."""
