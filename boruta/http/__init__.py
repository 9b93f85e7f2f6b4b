"""The server's HTTP face: upstream's API v1, and the parts that share its listener.

`face.HttpFace` serves them on the server's loop; `api_v1` is upstream's API
on our operations (`upstream` its JSON, `errors` its statuses, `routing`
its routing rules, `cors` its CORS); `auth` tells who a request is.
"""
