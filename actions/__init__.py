"""Actions with behaviour of their own; plain REST actions live only in the manifest."""
