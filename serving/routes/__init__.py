"""The API's routes, one module per concern, each an ``APIRouter`` whose handlers get the
app's ``Service`` as a dependency (``serving.service.service``): ``health`` (/healthz,
/readyz, /metrics), ``features`` (/v1/features), ``predict`` (/v1/predict)."""
