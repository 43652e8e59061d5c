"""Scoring, filtering and near-duplicate removal (issue 3).

``frames`` decodes each clip once for every scorer; ``stages`` are the score stages (pixel stats,
CLIP scores as an actor pool); ``dedup`` groups near-duplicates from embeddings; ``filters``
holds the SQL rules and the funnel; ``job`` runs the score and filter jobs; ``train`` gathers
clips for ``vidcorpus train-clip``.
"""
