"""Finding, pairing and forgetting phones: `btgw scan`, `pair`, `unpair`."""
