"""Pre-flight: everything checked and derived from an experiment config before any job starts, in the layer
above training (it reads the registries of objectives, datasets and networks): ``checks`` (one ConfigError
listing every bad key) and ``runs`` (a run's complete config, its fingerprint and its label in tables)."""
