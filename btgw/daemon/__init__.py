"""The gateway daemon (`btgw run`) and what reports on it (`status`, `health`)."""
