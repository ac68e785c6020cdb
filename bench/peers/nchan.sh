#!/bin/sh
# nginx + nchan (Debian libnginx-mod-nchan) as a pub/sub server: GET /sub/ID
# subscribes (EventSource or WebSocket), POST /pub/ID publishes one message to
# every subscriber. sluice-bench --target nchan is the publisher (one POST per
# token, the same JSON sluice sends). One worker process: bench/compare pins
# it to one core.  Usage: nchan.sh PORT DIR
set -eu
PORT="$1"
DIR="$2"
MOD=/usr/lib/nginx/modules/ngx_nchan_module.so
[ -f "$MOD" ] || MOD=/usr/share/nginx/modules/ngx_nchan_module.so
mkdir -p "$DIR/logs" "$DIR/tmp"
cat > "$DIR/nginx.conf" <<CONF
load_module $MOD;
worker_processes 1;
worker_rlimit_nofile 200000;
pid $DIR/nginx.pid;
error_log $DIR/logs/error.log warn;
events { worker_connections 200000; multi_accept on; }
http {
  access_log off;
  # Messages live seconds at most here; a small zone keeps its start-up cost
  # (touched on first use) out of the memory per connection.
  nchan_max_reserved_memory 16m;
  client_body_temp_path $DIR/tmp;
  keepalive_timeout 3600s;
  keepalive_requests 100000000;
  tcp_nodelay on;
  server {
    listen 127.0.0.1:$PORT backlog=4096;
    location ~ ^/sub/(\w+)$ {
      nchan_subscriber eventsource websocket;
      nchan_channel_id \$1;
      nchan_subscriber_first_message newest;
    }
    location ~ ^/pub/(\w+)$ {
      nchan_publisher http;
      nchan_channel_id \$1;
      nchan_message_buffer_length 16;
      nchan_message_timeout 30s;
    }
  }
}
CONF
exec nginx -p "$DIR" -c "$DIR/nginx.conf" -g 'daemon off;'
