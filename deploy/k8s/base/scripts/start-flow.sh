#!/bin/sh
# Entry point of a flow pod: one Bytewax process per StatefulSet pod.
# The process id is the pod's ordinal (HOSTNAME = <statefulset>-<ordinal>) and the cluster is
# every pod of the StatefulSet, addressed through its headless Service
# (<statefulset>-<i>.<statefulset>-headless.<namespace>.svc.<cluster domain>:<port>).
# BYTEWAX_REPLICAS must equal spec.replicas (kustomize copies it: see base/kustomization.yaml);
# the judges also read it to split the configured provider rate limits across processes.
set -eu

flow="${1:?usage: start-flow.sh assessment|judge}"
size="${BYTEWAX_REPLICAS:?BYTEWAX_REPLICAS (the StatefulSet replica count) is not set}"
port="${CLUSTER_PORT:-2101}"
domain="${CLUSTER_DOMAIN:-cluster.local}"
namespace="${POD_NAMESPACE:?POD_NAMESPACE is not set}"
host="${HOSTNAME:?}"
statefulset="${host%-*}"
ordinal="${host##*-}"

case "$ordinal" in
  '' | *[!0-9]*)
    echo "start-flow: cannot take a process id from hostname '$host' (expected <name>-<ordinal>)" >&2
    exit 64 ;;
esac
case "$size" in
  '' | *[!0-9]* | 0)
    echo "start-flow: BYTEWAX_REPLICAS must be a positive integer, got '$size'" >&2
    exit 64 ;;
esac
if [ "$ordinal" -ge "$size" ]; then
  echo "start-flow: pod ordinal $ordinal is outside a cluster of $size processes (BYTEWAX_REPLICAS out of step with replicas?)" >&2
  exit 64
fi

addresses=""
i=0
while [ "$i" -lt "$size" ]; do
  address="${statefulset}-${i}.${statefulset}-headless.${namespace}.svc.${domain}:${port}"
  addresses="${addresses:+${addresses};}${address}"
  i=$((i + 1))
done

echo "start-flow: $flow process $ordinal of $size"
# An explicit --metrics-port: without it `cjflow run` adds the process id to the port (for
# several processes on one host); each pod has its own IP, so all use the same port.
exec cjflow run "$flow" --process-id "$ordinal" --addresses "$addresses" \
  --metrics-port "${CJFLOW_METRICS_PORT:-9464}"
