"""Two-stage fraud scoring: shared code of the Lambda functions and the training job."""

__version__ = "0.1.0"
