"""The featurizer service: the live Kafka runner of the feature module."""
