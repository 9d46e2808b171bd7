"""The live page's static files (index.html, app.js), shipped as package data."""
