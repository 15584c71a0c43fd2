return {cluster = 1, replicas = "3", flags = "x", debug = "yes"}
