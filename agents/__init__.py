"""Processing: one module per agent. Nothing imports these; Faust's autodiscovery does."""
