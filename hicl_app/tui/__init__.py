"""`hicl tui`: a Textual dashboard over the catalog.

The data side (data.py, chart.py, forms.py, prefs.py) never imports Textual, so it can be
tested, reused and benchmarked on its own; app.py, screens/ and widgets/ are the face.
"""
