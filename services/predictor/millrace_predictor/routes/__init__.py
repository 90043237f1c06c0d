"""The predictor's HTTP routes: Millrace's own, the Open Inference Protocol, health."""
