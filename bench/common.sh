# Shared by the bench scripts: sourced, not run.

# Messages go to stderr with the time; the report stays alone on stdout.
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
