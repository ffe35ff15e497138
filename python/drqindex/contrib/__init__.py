"""Optional integrations that need extra packages; none of them is imported by `import drqindex`.

    drqindex.contrib.ray    sharded build and search on a Ray cluster (pip install drqindex[ray])
"""
