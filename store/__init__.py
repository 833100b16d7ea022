"""MongoDB repositories (pymongo) and GridFS blob storage."""
