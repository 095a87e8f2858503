"""Graph -> torch: plans and the FlowModel."""
