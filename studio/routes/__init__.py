"""The studio's routes, one Flask blueprint per module, all reading the app's `context.Studio`.

context: the settings, models and sessions that the routes share, and the request's session;
pages_and_files: /, the pages, static files and generated outputs (/out/<id>.<kind>);
info: /api/info; evolve: /api/evolve...; harmonize: /api/harmonize...
"""
