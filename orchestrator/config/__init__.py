"""Reading, merging and checking the TOML config."""
