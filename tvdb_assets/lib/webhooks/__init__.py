"""Signed webhooks: verifying deliveries (`signatures`), reading them (`payloads`), the HTTP
receiver behind `tvdb webhook serve` (`receiver`), and a parse job's outcome as its webhook
reported it (`parse_events`). The receiver's web stack is imported only by the command."""
