"""The predictor service: HTTP predictions from the production model, hot-swapped."""
