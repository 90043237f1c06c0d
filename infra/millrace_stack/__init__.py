"""Local infrastructure without Docker: Apache Kafka (KRaft) and Redis as local processes."""
