#!/bin/sh
# Renders MouthMap's nginx-rtmp template for the compose system and runs
# nginx. This image has the RTMP module built in (no load_module line);
# ingest shares this network namespace, so everything is on loopback.
set -eu
secret=$(cat /run/secrets/rtmp_callback_secret)
mkdir -p /tmp/nginx /var/log/mouthmap
sed -e '/load_module/d' \
    -e "s|@PREFIX@|/tmp/nginx|g" \
    -e "s|@LOG_DIR@|/var/log/mouthmap|g" \
    -e "s|@RTMP_LISTEN@|0.0.0.0:1935|g" \
    -e "s|@CALLBACK_LISTEN@|127.0.0.1:1936|g" \
    -e "s|@INGEST_HOSTPORT@|127.0.0.1:8088|g" \
    -e "s|@CALLBACK_SECRET@|${secret}|g" \
    -e "s|@ALLOW_PUBLISH@|allow publish all;|g" \
    /etc/mouthmap/nginx-rtmp.conf.template > /tmp/nginx/nginx.conf
exec nginx -c /tmp/nginx/nginx.conf
