# CDN edge: Varnish in front of the S3 origin, the local stand-in for CloudFront.
#
# TEMPLATE, rendered by `python -m tools.edge_vcl` before varnishd loads it: the origin's host and port from its
# arguments, the TTLs (min / default / max) and the response headers from infra/cdn-policy.json, the file Terraform
# reads for CloudFront's cache and response-headers policies (one source: tests/infra/test_cdn_policy.py).
#   - scripts/stack.sh renders it into $EDGE_DIR with 127.0.0.1 and $S3_PORT;
#   - docker-compose.kafka.yml renders it (service edge-config) with s3 and 7070.
# Run with `-p default_grace=0` (an expired object is refetched, never served stale once more).
vcl 4.1;

backend origin {
    .host = "@ORIGIN_HOST@";
    .port = "@ORIGIN_PORT@";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
}

# PURGE is accepted from the local machine only (tests, operators).
acl purgers {
    "127.0.0.1";
    "::1";
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        set req.url = regsub(req.url, "\?.*$", "");
        return (purge);
    }
    # The edge only serves images: uploads go to S3 directly with pre-signed POSTs, never through here.
    if (req.method != "GET" && req.method != "HEAD") {
        return (synth(405, "Method Not Allowed"));
    }
    # Public objects only: no per-user variants, so credentials never reach the origin or the cache key.
    unset req.http.Cookie;
    unset req.http.Authorization;
    # Query strings (including pre-signed GET signatures) are dropped: one cache entry per object key.
    set req.url = regsub(req.url, "\?.*$", "");
    return (hash);
}

sub vcl_backend_response {
    unset beresp.http.Set-Cookie;
    # Never cache errors: a 403/404 for a key that is uploaded a moment later must not stick for 24 h.
    # Same status, but our own short text body (vcl_backend_error), not the origin's XML.
    if (beresp.status >= 400) {
        return (error(beresp.status, beresp.reason));
    }
    # Images only, as images: an object whose Content-Type is not one of the raster types the pipeline takes
    # (HTML, SVG, XML, a bucket listing, no type at all) is refused, so it can neither run script on this
    # domain nor be hosted for free. Uploads are pinned to such types; this holds for objects put otherwise.
    if (beresp.http.Content-Type !~ "^(?i)image/(jpeg|png|webp|gif|avif|heic|heif)\s*(;.*)?$") {
        return (error(403, "Forbidden: not an image"));
    }
    # The bucket's own headers never decide how a browser treats the bytes.
    unset beresp.http.Content-Disposition;
    unset beresp.http.Content-Encoding;
    # CloudFront's cache policy, from infra/cdn-policy.json: the default TTL when the origin sends neither
    # Cache-Control nor Expires, else the origin's TTL kept within [min, max].
    if (!beresp.http.Cache-Control && !beresp.http.Expires) {
        set beresp.ttl = @TTL_DEFAULT@s;
    } else if (beresp.ttl > @TTL_MAX@s) {
        set beresp.ttl = @TTL_MAX@s;
    } else if (beresp.ttl < @TTL_MIN@s) {
        set beresp.ttl = @TTL_MIN@s;
    }
    # Fall through to the builtin VCL: it still refuses to cache private, no-store and no-cache responses.
}

sub vcl_backend_error {
    # Refusals and origin failures: a short text body of our own, never cached, never the origin's XML.
    set beresp.http.Content-Type = "text/plain; charset=utf-8";
    set beresp.ttl = 0s;
    set beresp.uncacheable = true;
    synthetic(beresp.status + " " + beresp.reason + {"
"});
    return (deliver);
}

sub vcl_synth {
    set resp.http.Content-Type = "text/plain; charset=utf-8";
    # Refusals carry the same headers as everything else (CloudFront's policy applies to errors too).
@RESPONSE_HEADERS@
    synthetic(resp.status + " " + resp.reason + {"
"});
    return (deliver);
}

sub vcl_deliver {
    # On everything the edge sends (CloudFront's response-headers policy, from infra/cdn-policy.json): no content
    # sniffing (an image stays an image), HSTS, and a sandbox with no script, style or plugin sources should a
    # document ever get through.
@RESPONSE_HEADERS@
    # Same shape as CloudFront's "Hit from cloudfront" / "Miss from cloudfront": first token says it.
    # Varnish sets Age itself.
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
