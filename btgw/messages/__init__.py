"""Messages that are never lost: received SMS and missed calls, spooled to
SQLite before anything acknowledges them, then delivered at least once to
every configured sink (email, MQTT, webhook).  See docs/messages.md."""
