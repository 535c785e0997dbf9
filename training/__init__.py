"""Training job: simulate or ingest history, train both stages, evaluate, publish a bundle."""
