"""Deployment support: container and service files, and the network lab (`deploy.lab`)."""
