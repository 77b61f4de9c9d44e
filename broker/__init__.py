"""The embedded broker, its plugins, and the topic-ACL policy shared by every backend."""
