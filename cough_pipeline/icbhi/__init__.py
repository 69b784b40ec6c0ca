"""The ICBHI 2017 branch: recording and cycle tables with lung-sound labels (:mod:`.tables`), demographic
association tests and duration summaries (:mod:`.associations`), acoustic features (:mod:`.acoustics`) and
preprocessing for models (:mod:`.preprocessing`).

Submodules are imported explicitly (``from cough_pipeline.icbhi.tables import build_icbhi_tables``); this
package imports none of them, so each stays importable on its own.
"""
