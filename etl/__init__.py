"""Spark feature jobs: the lake's raw events -> offline feature tables (registered in Feast).

``etl.transforms`` holds the transformation functions (DataFrame -> DataFrame, no I/O),
shared by the batch job (``etl.batch``) and a streaming job."""
