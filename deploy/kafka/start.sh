#!/bin/sh
# Starts the compose deployment's broker: the config of deploy/kafka/server.properties plus the
# admin's JAAS lines, storage formatted once with the admin's SCRAM credential (KRaft keeps SCRAM
# users in its metadata, so the first one is bootstrapped here; deploy/kafka/setup.sh adds the
# services' users through it).
set -eu
: "${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD}"
: "${KAFKA_CLUSTER_ID:?set KAFKA_CLUSTER_ID (kafka-storage.sh random-uuid)}"
CONFIG=/tmp/server.properties
cp /opt/desk/kafka/server.properties "$CONFIG"
printf 'listener.name.internal.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="%s";\n' \
  "$KAFKA_ADMIN_PASSWORD" >> "$CONFIG"
printf 'listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="%s" user_admin="%s";\n' \
  "$KAFKA_ADMIN_PASSWORD" "$KAFKA_ADMIN_PASSWORD" >> "$CONFIG"
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t "$KAFKA_CLUSTER_ID" -c "$CONFIG" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=$KAFKA_ADMIN_PASSWORD]"
exec /opt/kafka/bin/kafka-server-start.sh "$CONFIG"
