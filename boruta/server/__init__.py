"""The Boruta server: the shell around the core Scheduler, on one asyncio loop."""
