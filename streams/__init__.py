"""The stream topology and the building blocks the agents use. Imports models only (and the app)."""
