"""Engines people already run clusters with: Ray Data (:mod:`faceage.integrations.ray`) and Spark
(:mod:`faceage.integrations.spark`). Each is an optional extra; both produce :mod:`faceage.engine` rows."""
