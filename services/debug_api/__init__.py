"""REST debugging API: look at imagined episodes (list, metadata, frames, video, p(done) curve).

`app.create_app(store)` builds the FastAPI app over an `EpisodeStore`; `server.main(config)`
serves it with uvicorn; `python -m worldenv.services.debug_api` runs `server.main`.
"""
