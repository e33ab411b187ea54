module secureai.local/images/pause

go 1.26.0
