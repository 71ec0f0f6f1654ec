"""Data only: settings, wire records, the classification schema and error codes. No I/O."""
