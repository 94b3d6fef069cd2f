#!/bin/sh
# make demo: two local test servers (mongosim) replicating both ways, driven
# by the README walkthrough.  Everything it starts is stopped on exit.
set -u
BUILD=${MMM_BUILD:-build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN="$ROOT/$BUILD/bin"
DIR=$(mktemp -d /tmp/mmm-demo.XXXXXX)
PY=/usr/bin/python3
pids=""

cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	for p in $pids; do wait "$p" 2>/dev/null; done
	rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

fail() { echo "demo: $*" >&2; exit 1; }

# start_sim NAME SETNAME: a mongosim on a free port; sets PORT
start_sim() {
	"$BIN/mongosim" --port 0 --replset "$2" >"$DIR/$1.out" 2>"$DIR/$1.log" &
	pids="$pids $!"
	i=0
	while ! grep -q '^ready port=' "$DIR/$1.out" 2>/dev/null; do
		i=$((i + 1)); [ $i -gt 100 ] && fail "mongosim '$1' did not start (see $DIR/$1.log)"
		sleep 0.1
	done
	PORT=$(sed -n 's/^ready port=//p' "$DIR/$1.out")
}

start_sim a a; PA=$PORT
start_sim b b; PB=$PORT
cd "$DIR" || exit 1
cat > test.yml <<YML
server_a:
  id: '2c88ae84-7cb9-40f7-835d-c05e981f564d'
  uri: 'mongodb://127.0.0.1:$PA/?replicaSet=a'
server_b:
  id: '0d9c284b-b47c-40b5-932c-547b8685edd0'
  uri: 'mongodb://127.0.0.1:$PB/?replicaSet=b'
YML
echo "# two test servers: server_a on port $PA, server_b on port $PB; test.yml:"
sed 's/^/    /' test.yml
show() { echo "\$ $*"; "$@" || fail "'$*' failed"; }
mmm() { "$BIN/mmm" "$@"; }

echo "\$ mmm -c test.yml clear-config"
echo y | mmm -c test.yml clear-config || fail "clear-config failed"
show mmm -c test.yml dump-config
show mmm -c test.yml replicate --src=server_a/test.foo --dst=server_b/test.foo
show mmm -c test.yml replicate --src=server_a/test.bar --dst=server_b/test.bar
show mmm -c test.yml replicate --src=server_b/test.foo --dst=server_a/test.foo
show mmm -c test.yml replicate --src=server_b/test.bar --dst=server_a/test.bar
show mmm -c test.yml dump-config
echo "\$ mmm -c test.yml run &"
"$BIN/mmm" -c test.yml run 2>"$DIR/run.log" &
runpid=$!
pids="$runpid $pids"

echo "# writes on both sides: a document into server_a/test.foo, one into server_b/test.bar,"
echo "# an update and a delete on server_a"
$PY - "$PA" "$PB" <<'PYEOF' || fail "replication did not happen (see the log above)"
import sys, time, pymongo
a = pymongo.MongoClient("mongodb://127.0.0.1:%s/?replicaSet=a" % sys.argv[1], serverSelectionTimeoutMS=5000)
b = pymongo.MongoClient("mongodb://127.0.0.1:%s/?replicaSet=b" % sys.argv[2], serverSelectionTimeoutMS=5000)
time.sleep(0.5)   # let `mmm run` start tailing (it starts at the newest entry)
a.test.foo.insert_many([{"_id": 1, "city": "Lyon", "n": 1}, {"_id": 2, "city": "Oslo", "n": 2}])
b.test.bar.insert_one({"_id": "b1", "from": "server_b"})
a.test.foo.update_one({"_id": 1}, {"$inc": {"n": 41}, "$set": {"tags": ["x", "y"]}})
a.test.foo.delete_one({"_id": 2})
def same():
    return (list(a.test.foo.find().sort("_id")) == list(b.test.foo.find().sort("_id")) and
            list(a.test.bar.find().sort("_id")) == list(b.test.bar.find().sort("_id")) and
            b.test.foo.count_documents({}) == 1 and a.test.bar.count_documents({}) == 1)
deadline = time.time() + 30
while not same():
    if time.time() > deadline:
        sys.exit(1)
    time.sleep(0.1)
for name, c in (("server_a", a), ("server_b", b)):
    print("%s test.foo: %s" % (name, list(c.test.foo.find().sort("_id"))))
    print("%s test.bar: %s" % (name, list(c.test.bar.find().sort("_id"))))
PYEOF
sleep 1.2   # one status period, so the figures below are fresh
show mmm -c test.yml status
show mmm -c test.yml verify
kill "$runpid"; wait "$runpid"; rc=$?
pids=$(echo "$pids" | sed "s/$runpid//")
[ $rc -eq 0 ] || fail "mmm run exited $rc (see $DIR/run.log)"
echo "# demo passed: both masters replicate both ways; everything started is stopped"
