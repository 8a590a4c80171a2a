"""The worker tier: the in-pod launcher running the real LLaMA-Factory on the CPU with a tiny model
that the test builds itself (no weights are downloaded). Its tests arrive with the trainer."""
