#!/bin/sh
# Render /etc/asterisk from the environment and run Asterisk in the foreground.
#   SIPLAB_NODE_NAME  node name = Asterisk systemname (ps_contacts.reg_server)   (default pbx1)
#   SIPLAB_BIND       address of the PJSIP transports                             (127.0.0.11)
#   SIPLAB_PORT       SIP port                                                     (5060)
#   SIPLAB_DB_URL     postgresql://user:password@host:port/dbname                  (required)
#   SIPLAB_ROUTER     router address(es), comma-separated: endpoint `router`       (127.0.0.10)
#   SIPLAB_ROUTER_PORT  router SIP port for the `router` AOR contact               (5060)
#   SIPLAB_TIME_SCALE multiplies dialplan waits and pjsip timer_t1                 (1.0)
#   SIPLAB_RTP_START / SIPLAB_RTP_END  RTP ports                                   (10000/20000)
#   SIPLAB_CONTACTS   astdb (per node) or realtime (shared ps_contacts), see sorcery.conf (astdb)
#   SIPLAB_ASTERISK_ETC  where the configs are written                            (/etc/asterisk)
#   SIPLAB_RENDER_ONLY=1 render and exit (used by siplab's tests, which cannot build the image)
set -eu
NODE="${SIPLAB_NODE_NAME:-pbx1}"
BIND="${SIPLAB_BIND:-127.0.0.11}"
PORT="${SIPLAB_PORT:-5060}"
URL="${SIPLAB_DB_URL:?SIPLAB_DB_URL is required (postgresql://user:password@host:port/db)}"
ROUTERS="${SIPLAB_ROUTER:-127.0.0.10}"
ROUTER_PORT="${SIPLAB_ROUTER_PORT:-5060}"
SCALE="${SIPLAB_TIME_SCALE:-1.0}"

# postgresql://user:password@host:port/dbname (postgres:// accepted)
case "$URL" in
    postgresql://*) rest="${URL#postgresql://}" ;;
    postgres://*) rest="${URL#postgres://}" ;;
    *) echo "siplab-asterisk: SIPLAB_DB_URL must be postgresql://..., got $URL" >&2; exit 2 ;;
esac
creds="${rest%%@*}"; hostpart="${rest#*@}"
DB_USER="${creds%%:*}"; DB_PASS="${creds#*:}"
[ "$DB_PASS" = "$creds" ] && DB_PASS=""
hostport="${hostpart%%/*}"; DB_NAME="${hostpart#*/}"; DB_NAME="${DB_NAME%%\?*}"
DB_HOST="${hostport%%:*}"; DB_PORT="${hostport#*:}"
[ "$DB_PORT" = "$hostport" ] && DB_PORT=5432

scaled() { awk -v s="$SCALE" -v v="$1" 'BEGIN { x = v * s; printf (x == int(x) ? "%d" : "%.3f"), x }'; }
WAIT_601=$(scaled 60); WAIT_602=$(scaled 3)
T1=$(awk -v s="$SCALE" 'BEGIN { t = int(500 * s); print (t < 100 ? 100 : t) }')
TIMER_B=$((T1 * 64))
FIRST_ROUTER="${ROUTERS%%,*}"
MATCHES=$(echo "$ROUTERS" | tr ',' '\n' | sed -n 's/^ *\([^ ]\{1,\}\) *$/match=\1/p')

case "${SIPLAB_CONTACTS:-astdb}" in
    astdb) CONTACT_WIZARD="contact = astdb,registrar" ;;
    realtime) CONTACT_WIZARD="contact = realtime,ps_contacts" ;;
    *) echo "siplab-asterisk: SIPLAB_CONTACTS must be astdb or realtime, got $SIPLAB_CONTACTS" >&2; exit 2 ;;
esac
export CONTACT_WIZARD
export NODE BIND PORT DB_USER DB_PASS DB_NAME DB_HOST DB_PORT WAIT_601 WAIT_602 T1 TIMER_B \
    FIRST_ROUTER ROUTER_PORT MATCHES
export RTP_START="${SIPLAB_RTP_START:-10000}" RTP_END="${SIPLAB_RTP_END:-20000}"
T="${SIPLAB_TEMPLATES:-/usr/share/siplab-asterisk}"
ETC="${SIPLAB_ASTERISK_ETC:-/etc/asterisk}"
mkdir -p "$ETC"
for f in "$T"/*.conf; do
    # ${VAR} placeholders only (the dialplan's own ${EXTEN} is written as $${EXTEN}).
    awk '{
        line = $0; out = "";
        while (match(line, /\$?\$\{[A-Z_0-9]+\}/)) {
            tok = substr(line, RSTART, RLENGTH);
            if (substr(tok, 1, 2) == "$$") rep = substr(tok, 2);
            else { name = substr(tok, 3, RLENGTH - 3); rep = ENVIRON[name] }
            out = out substr(line, 1, RSTART - 1) rep; line = substr(line, RSTART + RLENGTH)
        }
        print out line
    }' "$f" > "$ETC/$(basename "$f")"
done
echo "siplab-asterisk: node $NODE on $BIND:$PORT, db $DB_HOST:$DB_PORT/$DB_NAME, router $ROUTERS"
[ "${SIPLAB_RENDER_ONLY:-0}" = 1 ] && exit 0
exec asterisk -f -vvv
