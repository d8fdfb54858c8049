#!/bin/bash
# kafka-run-class.sh CLASS [ARGS]: a JVM with the jars of /opt/kafka/libs,
# the same environment variables as Kafka's own script. Tools get a small
# heap, one GC thread and the C1 compiler only: they start in a few seconds
# on a busy 2-core machine, which docker-compose.yml's health check needs.
set -euo pipefail
base=/opt/kafka
: "${KAFKA_HEAP_OPTS:=-Xmx256M}"
: "${KAFKA_JVM_PERFORMANCE_OPTS:=-XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}"
: "${KAFKA_LOG4J_OPTS:=-Dlog4j2.configurationFile=$base/config/tools-log4j2.properties}"
# shellcheck disable=SC2086  # the *_OPTS variables are word lists
exec java $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS $KAFKA_LOG4J_OPTS ${KAFKA_OPTS:-} \
    -cp "$base/libs/*" "$@"
