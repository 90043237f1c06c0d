"""``python -m predictor``: serve predictions over HTTP."""

from __future__ import annotations

import uvicorn

from millrace.kafka import Durability, TopicSpec, ensure_topics, wait_for_broker
from millrace.logs import configure_logging
from millrace_predictor.app import create_app
from millrace_predictor.settings import PredictorSettings


def main() -> None:
    settings = PredictorSettings()
    configure_logging("predictor", settings.log_level)
    if settings.follow_model_events or settings.log_predictions:
        wait_for_broker(settings.kafka)
    if settings.log_predictions:
        ensure_topics(
            settings.kafka,
            [TopicSpec(settings.predictions_topic, 3)],
            durability=Durability.of(settings),
        )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
