#!/bin/sh
# Runs a command as the broker's admin: KAFKA_ADMIN_CONFIG names a client config with the
# admin's SCRAM credential, written here from KAFKA_ADMIN_PASSWORD and removed afterwards.
set -eu
: "${KAFKA_ADMIN_PASSWORD:?set KAFKA_ADMIN_PASSWORD}"
KAFKA_ADMIN_CONFIG=$(mktemp)
trap 'rm -f "$KAFKA_ADMIN_CONFIG"' EXIT
printf '%s\n' 'security.protocol=SASL_PLAINTEXT' 'sasl.mechanism=SCRAM-SHA-512' > "$KAFKA_ADMIN_CONFIG"
printf 'sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="%s";\n' \
  "$KAFKA_ADMIN_PASSWORD" >> "$KAFKA_ADMIN_CONFIG"
export KAFKA_ADMIN_CONFIG
"$@"
