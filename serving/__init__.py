"""The online API (``skewless serve``): ``app`` the routes, ``online_reader`` the Redis read
path, ``champion`` the model being served, ``prediction_log`` the Kafka log, ``guard``
key/size/metrics middleware and last-resort 500, ``request_body`` strict JSON in and bounded
422s out, ``schemas`` the bodies, ``metrics`` Prometheus."""
