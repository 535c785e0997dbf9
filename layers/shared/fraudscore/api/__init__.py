"""HTTP API of the stage-1 function (FastAPI); served by Mangum in Lambda, uvicorn locally."""
