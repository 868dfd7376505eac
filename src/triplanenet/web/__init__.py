"""The web demo (``triplanenet serve``): FastAPI app in :mod:`triplanenet.web.app`, page in ``static/index.html``."""
