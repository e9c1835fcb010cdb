#!/bin/sh
# Init container of a flow pod: create the Bytewax recovery partitions if they are absent.
# Only ordinal 0 holds partitions; the other processes of the cluster start with an empty
# recovery directory and Bytewax routes their snapshots to the partitions on process 0.
# That keeps every partition in exactly one place, so the replica count can change without
# moving files (see docs/deploy.md, "Scale out"). Never re-creates existing partitions.
set -eu

dir="${CJFLOW_RECOVERY_DIR:?CJFLOW_RECOVERY_DIR is not set}"
partitions="${CJFLOW_RECOVERY_PARTITIONS:?CJFLOW_RECOVERY_PARTITIONS is not set}"
host="${HOSTNAME:?}"
ordinal="${host##*-}"

mkdir -p "$dir"
existing=$(find "$dir" -maxdepth 1 -name 'part-*.sqlite3' | wc -l)

if [ "$ordinal" != "0" ]; then
  if [ "$existing" -ne 0 ]; then
    echo "init-recovery: warning: $existing partition(s) in $dir on process $ordinal; only process 0 should hold partitions" >&2
  fi
  echo "init-recovery: process $ordinal keeps no partitions"
  exit 0
fi

if [ "$existing" -ne 0 ]; then
  echo "init-recovery: $existing recovery partition(s) present in $dir; resuming from them"
  if [ "$existing" -ne "$partitions" ]; then
    # The partition count is fixed when the partitions are created; a later change of
    # CJFLOW_RECOVERY_PARTITIONS has no effect on an existing set.
    echo "init-recovery: note: CJFLOW_RECOVERY_PARTITIONS=$partitions differs from the existing set" >&2
  fi
  exit 0
fi

# Create in a scratch directory on the same volume, then move into place, so a crash half way
# never leaves a partial set that looks initialised.
scratch="$dir/.init-partitions"
rm -rf "$scratch"  # left over from an interrupted init: start again
mkdir -p "$scratch"
cjflow recovery init --dir "$scratch" --partitions "$partitions"
mv "$scratch"/part-*.sqlite3 "$dir"/
rmdir "$scratch"
echo "init-recovery: created $partitions recovery partition(s) in $dir"
