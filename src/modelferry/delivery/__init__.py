"""Edge delivery: protocol messages, channels, delivery sessions and fleet rollout."""
